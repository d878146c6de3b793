"""Consent, the consent ledger, encryption of personal data, erasure and export."""
