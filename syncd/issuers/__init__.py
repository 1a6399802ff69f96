"""Clients for e-invoice providers behind one interface (`syncd.issuers.base`).

See docs/issuers.md for the contract a provider module must honour, and
`syncd.issuers.registry` for how a provider is chosen by name.
"""
