# Sourced by the benchmark scripts: input_size MODEL sets `size` to the flags of the input the
# model is benchmarked at (its families' usual size: PCB 384x192, Swin 224x224, else 256x128).
input_size() {
  size=(--height 256 --width 128)
  [[ $1 == pcb ]] && size=(--height 384 --width 192)
  [[ $1 == ft_net_swin ]] && size=(--height 224 --width 224)
  return 0
}
