"""What SREs see: Prometheus metrics (`metrics`), JSON logs with bound context and
secret redaction (`logs`), and the `/healthz`, `/readyz`, `/metrics` server (`health`)."""
