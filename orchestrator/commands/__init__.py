"""The ``activeseg`` subcommands: each module holds its commands' arguments beside what they run."""
