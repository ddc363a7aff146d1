"""What every layer shares: config checks, the command-line wrapper, files on disk, progress bars."""
