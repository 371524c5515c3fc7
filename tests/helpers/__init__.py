"""Test helpers: a stub OpenAI server, a hub mirror, PostgreSQL, tiny LoRAs, the native-crash guard."""
