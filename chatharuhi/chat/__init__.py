"""The chat: the chatbot and its turn loop, the lazy Reply, edits of committed turns, a client's messages."""
