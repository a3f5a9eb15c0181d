"""`plyr publish`: a musician's client of their own PDS, our media service and our AppView.

Imports protocol/ and core/ only (never appview/, indexer/ or media/): it runs on the
musician's machine and talks to the services over HTTP, as any other client would.
"""
