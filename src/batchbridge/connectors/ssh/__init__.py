"""SSH for SFTP sources and targets: pinned host keys, key authentication, one session.

May import config and errors only.
"""
