; Test boot media for the QEMU driver's tests: a BIOS boot sector (or, unchanged, an El Torito
; no-emulation boot image) that
;   1. prints MARKER on the first serial port (COM1, 0x3f8),
;   2. prints the metadata URL and secret the hypervisor handed over through fw_cfg
;      ("metadata-url=..." and "metadata-token=..." lines; "-" when absent),
;   3. with -DACPI, says "acpi: waiting for the power button" and powers the machine off
;      when the ACPI power button is pressed (QMP system_powerdown), like a guest OS that
;      honours ACPI shutdown; without it the guest ignores the button, like a hung OS,
;   4. then idles (hlt) forever.
;
; Build: nasm -f bin -DMARKER='"TEXT"' [-DACPI] -o boot.bin marker.asm
; The result is 512 bytes ending in the 0x55 0xAA boot signature.
bits 16
org 0x7c00

%ifndef MARKER
%define MARKER "EXTILITY TEST BOOT"
%endif

COM1        equ 0x3f8
FW_CFG_SEL  equ 0x510
FW_CFG_DATA equ 0x511
FW_CFG_DIR  equ 0x19
NAME_BUF    equ 0x600            ; scratch for one fw_cfg directory entry's name

start:
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7c00
    jmp 0:main                   ; a CD boot may enter at 07c0:0000: run from 0000:7cxx
main:
    sti
    cld
    mov si, msg_marker
    call print
    mov si, msg_url
    call print
    mov si, name_url
    call print_fw_cfg_file
    mov si, msg_token
    call print
    mov si, name_token
    call print_fw_cfg_file
%ifdef ACPI
    ; The PIIX4 power management function (PCI 00:01.3) has its I/O base at config 0x40.
    mov eax, 0x80000b40
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    in eax, dx
    and ax, 0xffc0
    mov bx, ax                   ; BX = PM base: PM1_STS +0, PM1_EN +2, PM1_CNT +4
    lea dx, [bx+2]
    mov ax, 0x0100               ; PWRBTN_EN
    out dx, ax
    mov si, msg_ready
    call print
.wait_button:
    hlt
    mov dx, bx
    in ax, dx
    test ax, 0x0100              ; PWRBTN_STS
    jz .wait_button
    mov si, msg_off
    call print
    lea dx, [bx+4]
    mov ax, 0x2000               ; SLP_EN with SLP_TYP 0: S5 (soft off) on QEMU's PIIX4
    out dx, ax
%endif
idle:
    hlt
    jmp idle

; print: SI = NUL-terminated string.
print:
    lodsb
    test al, al
    jz .done
    call putc
    jmp print
.done:
    ret

; putc: AL to COM1 once its transmitter is empty. Keeps every register but flags.
putc:
    push dx
    push ax
    mov dx, COM1 + 5
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    pop ax
    mov dx, COM1
    out dx, al
    pop dx
    ret

; read_be32: reads a big-endian u32 from the fw_cfg data port; BX = its low 16 bits.
read_be32:
    in al, dx
    in al, dx
    in al, dx
    mov bh, al
    in al, dx
    mov bl, al
    ret

; print_fw_cfg_file: SI = fw_cfg file name. Prints the file's contents, or "-", then CR LF.
print_fw_cfg_file:
    mov ax, FW_CFG_DIR
    mov dx, FW_CFG_SEL
    out dx, ax
    mov dx, FW_CFG_DATA
    call read_be32
    mov cx, bx                   ; entries
.entry:
    jcxz .absent
    call read_be32
    mov bp, bx                   ; size
    in al, dx                    ; select key, big-endian
    mov ah, al
    in al, dx
    mov [select], ax
    in al, dx                    ; reserved
    in al, dx
    push cx
    mov di, NAME_BUF
    mov cx, 56
    rep insb
    pop cx
    push si
    mov di, NAME_BUF
.compare:
    lodsb
    cmp al, [di]
    jne .differs
    inc di
    test al, al
    jnz .compare
    pop si
    mov ax, [select]
    mov dx, FW_CFG_SEL
    out dx, ax
    mov dx, FW_CFG_DATA
    mov cx, bp
.copy:
    jcxz .end
    in al, dx
    call putc
    dec cx
    jmp .copy
.differs:
    pop si
    dec cx
    jmp .entry
.absent:
    mov al, '-'
    call putc
.end:
    mov si, msg_crlf
    jmp print

msg_marker: db MARKER, 13, 10, 0
msg_url:    db "metadata-url=", 0
msg_token:  db "metadata-token=", 0
%ifdef ACPI
msg_ready:  db "acpi: waiting for the power button", 13, 10, 0
msg_off:    db "power button pressed: powering off", 13, 10, 0
%endif
msg_crlf:   db 13, 10, 0
name_url:   db "opt/com.extility/metadata-url", 0
name_token: db "opt/com.extility/metadata-token", 0
select:     dw 0

    times 510 - ($ - $$) db 0
    dw 0xaa55
