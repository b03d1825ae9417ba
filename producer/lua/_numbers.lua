-- Integers as decimal strings: Lua numbers are doubles and tostring() may use exponents.
local function istr(n)
  return string.format('%d', n)
end
