import { onMounted, onUnmounted, ref } from 'vue'

/**
 * A button's panel (the header's menu, the chat's voice settings): it closes on a click
 * outside `root` and on Escape, which gives the focus back to the panel's button.
 */
export function usePopover() {
  const open = ref(false)
  const root = ref<HTMLElement>()

  function onDocumentClick(event: MouseEvent) {
    if (open.value && !root.value?.contains(event.target as Node))
      open.value = false
  }
  function onKey(event: KeyboardEvent) {
    if (event.key === 'Escape' && open.value) {
      open.value = false
      root.value?.querySelector('button')?.focus()
    }
  }
  onMounted(() => {
    document.addEventListener('click', onDocumentClick)
    document.addEventListener('keydown', onKey)
  })
  onUnmounted(() => {
    document.removeEventListener('click', onDocumentClick)
    document.removeEventListener('keydown', onKey)
  })
  return { open, root }
}
