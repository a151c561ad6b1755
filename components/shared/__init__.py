"""What both targets share: remote steps, credentials, the stack CA, DNS cutover, the role wiring."""
