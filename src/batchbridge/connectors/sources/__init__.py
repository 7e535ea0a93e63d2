"""Sources: where partner files are picked up, each behind the one Source protocol (base).

sftp is a partner's SFTP drop (through connectors/ssh); local is a folder standing in
for one (tests, dry runs, the demo); registry opens the one a feed names. names refuses
unsafe remote names, stability turns two listings into ready files, staging writes
downloads privately, selection picks which ready files a run takes. May import config,
validations, ledger, errors, crashpoints, progress and the other connectors' shared
pieces (ssh, retry, secrets); never tasks, flows, cli, steward or monitoring.
"""
