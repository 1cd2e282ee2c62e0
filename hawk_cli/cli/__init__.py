"""The command line: arguments, rendering and error mapping. No tensor code lives here."""
