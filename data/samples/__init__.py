"""A hand-written capture log covering every event type, for the quickstart and the tests."""
