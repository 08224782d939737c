"""Job modules. Every module in this package is imported by ``create_app`` at start-up."""
