"""One module per `dreamstream` subcommand; see :data:`dreamstream.cli.COMMANDS`."""
