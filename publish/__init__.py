"""`plyr publish`: tools for artists, from any machine (the user's PDS, our media service and AppView)."""
