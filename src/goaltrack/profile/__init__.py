"""The user's profile as every domain reads it (zone, locale, push and digest preferences).

The lowest domain package: it imports no other, so auth (registration creates the row), goals,
notifications, scheduling and account may all read it. Writes to it go through account."""
