"""Certificates of a federation (CA, coordinator certificate, hospital keys) and TLS checks of its endpoints."""
