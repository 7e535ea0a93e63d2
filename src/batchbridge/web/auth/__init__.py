"""Who is at the browser: OpenID Connect, a trusted proxy header, or the local demo login.

One mode per server (WorkbenchSettings.auth). Every mode ends in the same signed session
(web.sessions) naming one person, who must not be a shared account; roles and tenants
come from the stewards directory, exactly as for the CLI.
"""
