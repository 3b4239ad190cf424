"""Cache layers in front of the router: exact result cache, semantic cache, and the KV prefix cache."""
