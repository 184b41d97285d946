-- The original schema holds the user's configuration and history; it is never dropped.
SELECT 1;
