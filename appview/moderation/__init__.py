"""Moderation (owner of `moderation_actions` and `reports`): operators' actions, which our
labeler signs as labels (actions.py), users' reports and the review queue (reports.py), the
XRPC methods (methods.py) and `plyr admin` (cli.py)."""
