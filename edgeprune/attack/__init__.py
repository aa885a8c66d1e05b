"""Membership-inference attacks. They consume predictions, never training code."""
