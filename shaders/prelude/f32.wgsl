// Prelude for f32 kernels: prepended to every shader compiled with 32-bit elements.
alias Elem = f32;
