"""pgstack's Pulumi components, by target: `shared` (both targets), `hetzner`, `aws`.

`preflight` reads the world before anything registers; `scripts` holds the in-guest programs.
No target package imports the other (a test checks the import graph).
"""
