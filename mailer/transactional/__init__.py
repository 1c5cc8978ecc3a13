"""Transactional and exempt messages (CASL s.6(6)): templates, rules, enqueue, store."""
