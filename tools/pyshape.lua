function shape(rec)
  local m = map()
  m['size'] = list.size(rec['l'])
  m['first'] = rec['l'][1]
  return m
end
