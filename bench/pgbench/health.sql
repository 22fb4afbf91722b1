-- j. conveyor.health(), the whole document.
SELECT conveyor.health();
