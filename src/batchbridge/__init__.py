"""batchbridge: nightly healthcare batch files from SFTP to loaded, reconciled, audited results."""
