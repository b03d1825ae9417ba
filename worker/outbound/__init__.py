"""Outbound calls to addresses a request chose (webhooks, download redirects), guarded."""
