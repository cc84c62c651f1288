"""REST controllers, one module per resource; each handler a few lines that delegate."""
