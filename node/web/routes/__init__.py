"""The web application's routers, one per concern; each is built from the shared ``WebContext``."""
