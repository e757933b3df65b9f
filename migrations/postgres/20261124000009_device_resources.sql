-- What a plex.tv-style device provides (`server`, `player`, …) and, for media servers, the addresses it
-- published (a JSON array of URIs): the account's resources (issue 8).
ALTER TABLE devices ADD COLUMN provides TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN connections TEXT NOT NULL DEFAULT '[]';
