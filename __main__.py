"""pgstack: PostgreSQL in production, declared. See README.md."""

from components.stack import build
from config import load_settings

build(load_settings())
