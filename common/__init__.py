"""What every side of a federation shares: configuration, dataset schema, data readers, ML, run
directories, message keys, security and Flower process helpers. No Flower process, HTTP
service or CLI lives here.
"""
