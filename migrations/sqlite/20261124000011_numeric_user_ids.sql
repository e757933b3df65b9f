-- A stable integer per account for clients that expect numeric user ids (plex.tv-style, issue 8),
-- handed out the first time such a client asks.
CREATE TABLE numeric_user_ids (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE
);
