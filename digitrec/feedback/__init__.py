"""Learning from users: their labelled digits in a database (`store`), as MNIST files (`export`), the CLI."""
