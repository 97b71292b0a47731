-- A prelude for the scripts that derive per-scenario key names: ARGV[1] is always the prefix.
local P = ARGV[1]
local function sc_key(sc, suffix) return P .. ':{sc:' .. sc .. '}:' .. suffix end
