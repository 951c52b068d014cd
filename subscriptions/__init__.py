"""Topic-based and classic subscriptions: topics, parsing, matching, notifications."""
