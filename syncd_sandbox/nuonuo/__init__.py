"""The sandbox platform speaking Nuonuo's open-platform protocol (`--dialect nuonuo`)."""
