"""The chat: the chatbot and its turn loop, the lazy Reply, its history, a client's messages, the terminal chat."""
