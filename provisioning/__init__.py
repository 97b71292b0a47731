"""Provisioning machines for scenarios (Vultr API client, startup scripts, a local provider): a later issue."""
