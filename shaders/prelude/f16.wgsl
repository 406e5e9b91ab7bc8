// Prelude for f16 kernels: needs the adapter's SHADER_F16 feature.
enable f16;
alias Elem = f16;
