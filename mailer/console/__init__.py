"""The operators' browser console: `mailer console serve` (aiohttp, Jinja2, htmx, SSE).

Pages call the same role functions as the CLI (audience, lint, lifecycle, report figures,
explain, data rights): no rule is written twice. Accounts, sessions and CSRF live here.
"""
