"""The y-websocket document server that turns human presence into document_activity rows."""
