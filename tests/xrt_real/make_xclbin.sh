#!/bin/sh
# Builds the test's xclbin with XRT's own xclbinutil, in the sections an mlir-aie NPU design
# has (MEM_TOPOLOGY, a "dpu" kernel MLIR_AIE with mlir-aie's argument list, AIE_PARTITION with
# one PDI for that kernel), so real XRT parses, registers and opens it as it would a real one.
# The PDI is a marker the fake device reports back; the design itself is in the instruction
# stream (fake_amdxdna.c). Usage: make_xclbin.sh OUTPUT.xclbin
set -eu
out=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'npuhybrid-fake-pdi' > "$work/design.pdi"
cat > "$work/mem_topology.json" <<'JSON'
{ "mem_topology": { "m_count": "2", "m_mem_data": [
  { "m_type": "MEM_DRAM", "m_used": "1", "m_sizeKB": "0x10000", "m_tag": "HOST", "m_base_address": "0x4000000" },
  { "m_type": "MEM_DRAM", "m_used": "1", "m_sizeKB": "0xc000", "m_tag": "SRAM", "m_base_address": "0x4000000" } ] } }
JSON
arg() { printf '{ "name": "%s", "memory-connection": "HOST", "address-qualifier": "GLOBAL", "type": "void*", "offset": "%s" }' "$1" "$2"; }
cat > "$work/kernels.json" <<JSON
{ "ps-kernels": { "kernels": [ {
  "name": "MLIR_AIE", "type": "dpu",
  "extended-data": { "subtype": "DPU", "functional": "0", "dpu_kernel_id": "0x901" },
  "arguments": [
    { "name": "opcode", "address-qualifier": "SCALAR", "type": "uint64_t", "offset": "0x00" },
    { "name": "instr", "memory-connection": "SRAM", "address-qualifier": "GLOBAL", "type": "char *", "offset": "0x08" },
    { "name": "ninstr", "address-qualifier": "SCALAR", "type": "uint32_t", "offset": "0x10" },
    $(arg bo0 0x14), $(arg bo1 0x1c), $(arg bo2 0x24), $(arg bo3 0x2c), $(arg bo4 0x34) ],
  "instances": [ { "name": "MLIRAIE" } ] } ] } }
JSON
cat > "$work/aie_partition.json" <<JSON
{ "aie_partition": { "name": "QoS", "operations_per_cycle": "2048",
  "inference_fingerprint": "23423", "pre_post_fingerprint": "12345",
  "partition": { "column_width": 4, "start_columns": [0] },
  "PDIs": [ { "uuid": "6e70c5e1-7b5d-4c1e-9d7a-0e7a3b1f2c45", "file_name": "$work/design.pdi",
    "cdo_groups": [ { "name": "DPU", "type": "PRIMARY", "pdi_id": "0x01",
      "dpu_kernel_ids": ["0x901"], "pre_cdo_groups": ["0xC1"] } ] } ] } }
JSON
xclbinutil --quiet --force --output "$out" \
  --add-replace-section "MEM_TOPOLOGY:JSON:$work/mem_topology.json" \
  --add-kernel "$work/kernels.json" \
  --add-replace-section "AIE_PARTITION:JSON:$work/aie_partition.json"
