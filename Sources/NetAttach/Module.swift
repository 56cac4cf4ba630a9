// Module NetAttach.
