"""The built-in plugins: default implementations of the hooks, registered like any plugin."""
