# Fails unless README.md contains examples/quickstart/main.cpp verbatim (so the documented example is the
# compiled and tested one).
file(READ ${README} readme)
file(READ ${EXAMPLE} example)
string(FIND "${readme}" "${example}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "README.md does not contain examples/quickstart/main.cpp verbatim; update the README's example")
endif()
