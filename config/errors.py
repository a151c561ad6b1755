import pulumi


class ConfigError(pulumi.RunError):
    """A stack config value that cannot be used: names the key and the fix.

    A RunError, so the real engine prints the message without a Python traceback.
    """

    def __init__(self, key: str, message: str):
        self.key = f"pgstack:{key}" if not key.startswith("pgstack:") and ":" not in key else key
        self.detail = message
        super().__init__(f"{self.key}: {message}")
