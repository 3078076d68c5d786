# Block engine benchmark: run by hand (see docs/benchmarks.md).

add_executable(block_engine_bench block_engine_bench.cc)
target_link_libraries(block_engine_bench PRIVATE vessel_virtio_block)
