"""SSH for the SFTP source and the SFTP target: pinned host keys, key authentication, one session.

host_keys parses and checks pinned keys; connect opens a connection (only the pinned host
keys, only the configured private key) and sorts paramiko's failures; session is the
SshSession both connectors run their SFTP calls through, with one lock, reconnects and
the one retry layer (connectors/retry). Each connector maps failures onto its own branch
of the error tree. May import config, errors, crashpoints, progress and the connectors'
shared pieces (retry, secrets); never tasks, flows, cli, steward or monitoring.
"""
