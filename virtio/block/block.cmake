# virtio-blk device model (virtio/block). Included, once, by tests/block.cmake and
# benchmarks/block.cmake; virtio/CMakeLists.txt can take it over with
# include(block/block.cmake).
if(NOT TARGET vessel_virtio_block)
  pkg_check_modules(LIBURING REQUIRED IMPORTED_TARGET GLOBAL liburing)
  set(_blk ${PROJECT_SOURCE_DIR}/virtio/block)
  add_library(vessel_virtio_block STATIC
    ${_blk}/block_core.cc
    ${_blk}/config.cc
    ${_blk}/disk.cc
    ${_blk}/engine.cc
    ${_blk}/request.cc
    ${_blk}/sync_engine.cc
    ${_blk}/uring_engine.cc
  )
  target_include_directories(vessel_virtio_block PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(vessel_virtio_block PUBLIC vessel_vmm PkgConfig::LIBURING)
  # The virtio::Device adapter needs the transport library (virtio/CMakeLists.txt).
  if(TARGET vessel_virtio)
    target_sources(vessel_virtio_block PRIVATE ${_blk}/device.cc)
    target_link_libraries(vessel_virtio_block PUBLIC vessel_virtio)
  endif()
endif()
