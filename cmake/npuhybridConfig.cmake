# CMake package for npuhybrid: find_package(npuhybrid) gives
#   npuhybrid::npuhybrid         the shared library (libnpuhybrid.so.1)
#   npuhybrid::npuhybrid_static  the static library (links pthread, dl and m)
# Relocatable: paths are found from this file's location (<prefix>/<libdir>/cmake/npuhybrid).
get_filename_component(_nh_libdir "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
get_filename_component(_nh_prefix "${_nh_libdir}/.." ABSOLUTE)
set(_nh_include "${_nh_prefix}/include")

if(NOT EXISTS "${_nh_include}/npuhybrid.h" OR NOT EXISTS "${_nh_libdir}/libnpuhybrid.so.1")
  set(npuhybrid_FOUND FALSE)
  set(npuhybrid_NOT_FOUND_MESSAGE "npuhybrid files missing under ${_nh_prefix}")
  return()
endif()

include(CMakeFindDependencyMacro)
find_dependency(Threads)

if(NOT TARGET npuhybrid::npuhybrid)
  add_library(npuhybrid::npuhybrid SHARED IMPORTED)
  set_target_properties(npuhybrid::npuhybrid PROPERTIES
    IMPORTED_LOCATION "${_nh_libdir}/libnpuhybrid.so.1"
    IMPORTED_SONAME "libnpuhybrid.so.1"
    INTERFACE_INCLUDE_DIRECTORIES "${_nh_include}")
endif()

if(NOT TARGET npuhybrid::npuhybrid_static AND EXISTS "${_nh_libdir}/libnpuhybrid.a")
  add_library(npuhybrid::npuhybrid_static STATIC IMPORTED)
  set_target_properties(npuhybrid::npuhybrid_static PROPERTIES
    IMPORTED_LOCATION "${_nh_libdir}/libnpuhybrid.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_nh_include}"
    INTERFACE_LINK_LIBRARIES "Threads::Threads;${CMAKE_DL_LIBS};m")
endif()

set(npuhybrid_INCLUDE_DIRS "${_nh_include}")
set(npuhybrid_LIBRARIES npuhybrid::npuhybrid)
unset(_nh_libdir)
unset(_nh_prefix)
unset(_nh_include)
